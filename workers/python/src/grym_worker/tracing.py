"""W3C trace context for calls, when OpenTelemetry is installed: a worker's
server span continues the caller's `traceparent`, and the client sends the
current one. Without the `opentelemetry-api` package both do nothing."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import grpc

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - exercised where OpenTelemetry is absent
    trace = None  # type: ignore[assignment]


def enabled() -> bool:
    """Whether OpenTelemetry is installed."""
    return trace is not None


@contextlib.contextmanager
def server_span(context: grpc.aio.ServicerContext, method: str, request: Any) -> Iterator[Any]:
    """The span of one worker call, a child of the caller's trace."""
    if trace is None:
        yield None
        return
    carrier = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
    parent = propagate.extract(carrier)
    tracer = trace.get_tracer("grym_worker")
    attributes = {
        "rpc.system": "grpc",
        "rpc.service": "grym.worker.v1.ModelWorker",
        "rpc.method": method,
        "grym.task.id": getattr(request, "task_id", ""),
        "grym.task.type": getattr(request, "task_type", ""),
    }
    with tracer.start_as_current_span(
        f"grym.worker.v1.ModelWorker/{method}", context=parent, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


def record_failure(span: Any, code: grpc.StatusCode, message: str) -> None:
    """Marks a call's span failed with its gRPC code."""
    if span is None or trace is None:
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    span.set_status(Status(StatusCode.ERROR, message))


def outgoing_metadata(metadata: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """`metadata` with the current trace context added."""
    carrier: dict[str, str] = {}
    if trace is not None:
        propagate.inject(carrier)
    return [*metadata, *carrier.items()]
