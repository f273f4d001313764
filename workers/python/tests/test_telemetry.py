"""Telemetry of a worker: every call but health checks measured by the RPC
conventions, the `OTEL_*` variables choosing what is exported and how, and
the metric reaching a real OTLP/HTTP collector."""

from __future__ import annotations

import http.server
import threading
import time

import grpc
import pytest
from conftest import infer_request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grym_worker import Capability, InvalidInput, Model, Output
from grym_worker.telemetry import CallMetrics, Telemetry, TelemetryError, exported, protocol

pytest.importorskip("opentelemetry.sdk.metrics")

SERVICE = "grym.worker.v1.ModelWorker"


class Upper(Model):
    model_id = "upper"
    kind = "text-generation"
    capabilities = (Capability("upper", confidence=0.5),)

    def infer(self, request):
        if request.text() == "refuse":
            raise InvalidInput("invalid input: no refusals please")
        return Output(text=request.text().upper())


def wait_for(predicate, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def points(reader, name: str) -> list:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def test_every_call_but_health_checks_is_measured_by_the_rpc_conventions(serve):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    served = serve(Upper(), interceptors=[CallMetrics(meters.get_meter("test"))])
    wait_for(lambda: served.worker.loaded)
    health = health_pb2_grpc.HealthStub(served.channel)
    health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert served.stub.Infer(infer_request("upper", text="hi"), timeout=5).output.text == "HI"
    with pytest.raises(grpc.RpcError) as refused:
        served.stub.Infer(infer_request("upper", text="refuse"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    list(served.stub.InferStream(pb_stream_request(infer_request("upper", text="s")), timeout=5))

    found = points(reader, "rpc.server.call.duration")
    by_call = {(p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p for p in found}
    assert set(by_call) == {("Infer", 0), ("Infer", 3), ("InferStream", 0)}, by_call
    ok = by_call[("Infer", 0)]
    assert ok.attributes["rpc.system"] == "grpc"
    assert ok.attributes["rpc.service"] == SERVICE
    assert ok.count == 1 and 0 < ok.sum < 5
    assert ok.explicit_bounds[0] == 0.0001 and ok.explicit_bounds[-1] == 60.0


def pb_stream_request(request):
    from grym_worker.proto.grym.worker.v1 import worker_pb2 as pb

    return pb.InferStreamRequest(request=request)


def test_the_variables_choose_what_is_exported_and_over_which_protocol():
    assert not exported({}, "metrics")
    assert exported({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "metrics")
    assert exported({"OTEL_METRICS_EXPORTER": "otlp"}, "metrics")
    assert not exported({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"}, "metrics")
    assert not exported({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, "traces")
    assert protocol({}, "metrics") == "grpc"
    both = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    assert protocol(both, "metrics") == "http/protobuf"
    assert protocol(both, "traces") == "grpc"
    with pytest.raises(TelemetryError, match="OTEL_EXPORTER_OTLP_PROTOCOL.*http/json"):
        protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "metrics")
    with pytest.raises(TelemetryError, match="OTEL_METRICS_EXPORTER"):
        exported({"OTEL_METRICS_EXPORTER": "prometheus"}, "metrics")

    assert Telemetry.from_env(env={}).interceptors == []
    telemetry = Telemetry.from_env(
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert len(telemetry.interceptors) == 1 and telemetry.tracer_provider is None
    telemetry.shutdown()


class Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP collector that keeps the metric exports it is sent."""

    def __init__(self) -> None:
        self.exports: list = []
        self.content_types: list[str] = []
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
                ExportMetricsServiceRequest,
                ExportMetricsServiceResponse,
            )

            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != "/v1/metrics":
                self.send_error(404)
                return
            self.server.content_types.append(self.headers["Content-Type"])
            self.server.exports.append(ExportMetricsServiceRequest.FromString(body))
            answer = ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass


def test_the_call_metric_reaches_an_otlp_http_collector(serve, monkeypatch):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        # The exporter reads the endpoint itself, appending /v1/metrics.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "py-worker-test")
        telemetry = Telemetry.from_env()
        served = serve(Upper(), interceptors=telemetry.interceptors)
        wait_for(lambda: served.worker.loaded)
        served.stub.Infer(infer_request("upper", text="hi"), timeout=5)
        telemetry.shutdown()
    finally:
        collector.shutdown()

    assert collector.content_types and set(collector.content_types) == {"application/x-protobuf"}
    names, resource = [], {}
    for export in collector.exports:
        for resource_metrics in export.resource_metrics:
            resource.update({kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes})
            for scope in resource_metrics.scope_metrics:
                names.extend(metric.name for metric in scope.metrics)
    assert "rpc.server.call.duration" in names
    assert resource["service.name"] == "py-worker-test"
    assert resource["service.version"]
