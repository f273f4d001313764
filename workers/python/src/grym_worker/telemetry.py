"""Export of a worker's spans and RPC server metrics over OTLP, configured
by the standard `OTEL_*` variables the way grymd reads them.

A signal is exported when an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`
or the signal's own `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`) or its
exporter is named (`OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` =
`otlp`), unless it is `none` or `OTEL_SDK_DISABLED=true`. The protocol is
`OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,}PROTOCOL`: `grpc` (the default, as
for grymd) or `http/protobuf`; the exporter packages read the endpoints,
headers, timeout and compression themselves (OTLP/HTTP appends
`/v1/traces` and `/v1/metrics` to the shared endpoint).

Each call but health checks is measured by `CallMetrics`, a server
interceptor, into `rpc.server.call.duration` (seconds) with `rpc.system`,
`rpc.service`, `rpc.method` and `rpc.grpc.status_code`, as grymd and the
Rust workers record it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import grpc

# Health probes arrive every few seconds and would drown the calls that
# matter; grymd leaves them out too.
UNMEASURED_SERVICE = "grpc.health.v1.Health"

# The bucket boundaries grymd gives every histogram in seconds.
DURATION_BUCKETS_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip

PROTOCOLS = ("grpc", "http/protobuf")

SIGNALS = {
    "traces": ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    "metrics": ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"),
}

# The exporter class of each signal and protocol: (module, class).
EXPORTERS = {
    ("traces", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
    ("traces", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    ("metrics", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter"),
    ("metrics", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
}


class TelemetryError(ValueError):
    """A variable holds a value this module cannot use."""


def _value(env: Mapping[str, str], key: str) -> str | None:
    # Unset and empty are the same, as the specification asks.
    value = env.get(key, "").strip()
    return value or None


def protocol(env: Mapping[str, str], signal: str) -> str:
    """The OTLP protocol of `signal` (`traces` or `metrics`)."""
    key = SIGNALS[signal][2]
    for name in (key, "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = _value(env, name)
        if value is None:
            continue
        if value not in PROTOCOLS:
            raise TelemetryError(
                f"invalid `{name}`={value!r}: expected `grpc` or `http/protobuf` "
                "(the Python workers' OTLP exporters have no `http/json`)"
            )
        return value
    return "grpc"


def exported(env: Mapping[str, str], signal: str) -> bool:
    """Whether `signal` is exported."""
    exporter_key, endpoint_key, _ = SIGNALS[signal]
    exporter = _value(env, exporter_key)
    if exporter not in (None, "otlp", "none"):
        raise TelemetryError(f"invalid `{exporter_key}`={exporter!r}: expected `otlp` or `none`")
    disabled = _value(env, "OTEL_SDK_DISABLED")
    if disabled not in (None, "true", "false"):
        raise TelemetryError(f"invalid `OTEL_SDK_DISABLED`={disabled!r}: expected `true` or `false`")
    if exporter == "none" or disabled == "true":
        return False
    return exporter == "otlp" or bool(_value(env, endpoint_key) or _value(env, "OTEL_EXPORTER_OTLP_ENDPOINT"))


def exporter_class(signal: str, chosen: str) -> Any:
    """The OTLP exporter class for `signal` over `chosen`, or an error
    naming the package to install."""
    module, name = EXPORTERS[(signal, chosen)]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as error:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if chosen == "grpc" else "http")
        raise TelemetryError(
            f"exporting {signal} over `{chosen}` needs the `{package}` package "
            "(pip install 'grym-worker[otel]')"
        ) from error


class CallMetrics(grpc.aio.ServerInterceptor):
    """Measures every call but health checks into `rpc.server.call.duration`."""

    def __init__(self, meter: Any) -> None:
        self._duration = meter.create_histogram(
            "rpc.server.call.duration",
            unit="s",
            description="How long incoming gRPC calls take, to their status",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_SECONDS,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if handler is None or service == UNMEASURED_SERVICE:
            return handler
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        record = self._record
        if handler.unary_unary or handler.stream_unary:
            behavior = handler.unary_unary or handler.stream_unary

            async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = asyncio.get_running_loop().time()
                code = grpc.StatusCode.UNKNOWN
                try:
                    response = await behavior(request, context)
                    code = _code(context)
                    return response
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except BaseException:
                    code = _code(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    record(started, attributes, code)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        else:
            behavior = handler.unary_stream or handler.stream_stream

            async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
                started = asyncio.get_running_loop().time()
                code = grpc.StatusCode.UNKNOWN
                try:
                    async for response in behavior(request, context):
                        yield response
                    code = _code(context)
                except (asyncio.CancelledError, GeneratorExit):
                    code = grpc.StatusCode.CANCELLED
                    raise
                except BaseException:
                    code = _code(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    record(started, attributes, code)

            make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(
            answer,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _record(self, started: float, attributes: dict[str, Any], code: grpc.StatusCode) -> None:
        elapsed = asyncio.get_running_loop().time() - started
        self._duration.record(elapsed, {**attributes, "rpc.grpc.status_code": code.value[0]})


def _code(context: grpc.aio.ServicerContext, otherwise: grpc.StatusCode = grpc.StatusCode.OK) -> grpc.StatusCode:
    """The code a handler set (or aborted with), else `otherwise`."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), otherwise)
    return otherwise


def _version() -> str:
    try:
        return importlib.metadata.version("grym-worker")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass
class Telemetry:
    """What one worker process exports; `shutdown()` flushes it."""

    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    providers: list[Any] = field(default_factory=list)
    tracer_provider: Any = None

    @classmethod
    def from_env(cls, service_name: str = "grym-py-worker", env: Mapping[str, str] | None = None) -> "Telemetry":
        """The pipelines `env` (the process environment by default) asks
        for; none at all when it names no endpoint."""
        env = os.environ if env is None else env
        wanted = {signal: protocol(env, signal) for signal in SIGNALS if exported(env, signal)}
        if not wanted:
            return cls()
        classes = {signal: exporter_class(signal, chosen) for signal, chosen in wanted.items()}
        from opentelemetry.sdk.resources import Resource

        attributes = {"service.version": _version(), "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"}
        named = _value(env, "OTEL_SERVICE_NAME") or "service.name=" in (_value(env, "OTEL_RESOURCE_ATTRIBUTES") or "")
        if not named:
            attributes["service.name"] = service_name
        resource = Resource.create(attributes)
        telemetry = cls()
        if "metrics" in classes:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            # The reader takes OTEL_METRIC_EXPORT_INTERVAL itself.
            reader = PeriodicExportingMetricReader(classes["metrics"]())
            meters = MeterProvider(resource=resource, metric_readers=[reader])
            telemetry.providers.append(meters)
            telemetry.interceptors.append(CallMetrics(meters.get_meter("grym_worker")))
        if "traces" in classes:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            tracers = TracerProvider(resource=resource)
            tracers.add_span_processor(BatchSpanProcessor(classes["traces"]()))
            telemetry.providers.append(tracers)
            telemetry.tracer_provider = tracers
        return telemetry

    def install(self) -> None:
        """Makes the tracer provider the process's, for the spans the
        worker makes through the OpenTelemetry API."""
        if self.tracer_provider is not None:
            from opentelemetry import trace

            trace.set_tracer_provider(self.tracer_provider)

    def shutdown(self) -> None:
        """Exports what is pending and stops."""
        for provider in self.providers:
            provider.shutdown()
