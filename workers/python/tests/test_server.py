"""The SDK's server: health around load and drain, the concurrency limit
and its queue, deadlines, error mapping, streaming, trace context."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from conftest import infer_request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grym_worker import Capability, Chunk, InvalidInput, Model, Output
from grym_worker.proto.grym.worker.v1 import worker_pb2 as pb

SERVICE = "grym.worker.v1.ModelWorker"


class Echo(Model):
    model_id = "echo"
    kind = "text-generation"
    capabilities = (Capability("echo", confidence=0.5, estimated_latency=0.01),)
    max_concurrency = 1

    def __init__(self, loaded: threading.Event | None = None, release: threading.Event | None = None,
                 fail_load: Exception | None = None) -> None:
        self.loaded = loaded
        self.release = release
        self.fail_load = fail_load
        self.running = threading.Event()

    def load(self) -> None:
        if self.loaded is not None:
            self.loaded.wait(10)
        if self.fail_load is not None:
            raise self.fail_load

    def infer(self, request):
        text = request.text()
        if text == "boom":
            raise ValueError("the model broke")
        if text == "refuse":
            raise InvalidInput("invalid input: no refusals please")
        if self.release is not None:
            self.running.set()
            self.release.wait(10)
        return Output(text=text.upper(), json={"attempt": request.attempt})


class Counting(Model):
    model_id = "count"
    kind = "counter"
    capabilities = (Capability("count", confidence=0.5),)

    async def infer_stream(self, request):
        for n in range(3):
            yield Chunk(text=str(n))
        yield Output(text="done")


class SyncStream(Model):
    model_id = "sync-stream"
    kind = "counter"
    capabilities = (Capability("count", confidence=0.5),)

    def infer_stream(self, request):
        yield Chunk(json={"n": 1})
        yield Chunk(json={"n": 2})
        return Output(text="two")


def health(served, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(served.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for(predicate, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_not_serving_until_load_finishes_while_describe_answers(serve):
    loaded = threading.Event()
    served = serve(Echo(loaded=loaded))
    assert health(served) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(served, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    described = served.stub.Describe(pb.DescribeRequest(), timeout=5)
    assert described.model_id == "echo"
    assert described.capabilities[0].max_concurrency == 1
    assert described.capabilities[0].estimated_latency.ToMilliseconds() == 10
    assert list(described.capabilities[0].inputs) == []  # takes any
    with pytest.raises(grpc.RpcError) as error:
        served.stub.Infer(infer_request("echo", text="hi"), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in error.value.details()
    loaded.set()
    wait_for(lambda: health(served) == health_pb2.HealthCheckResponse.SERVING)
    assert health(served, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    answer = served.stub.Infer(infer_request("echo", text="hi"), timeout=5)
    assert answer.output.text == "HI"


def test_a_model_that_fails_to_load_stays_not_serving_and_says_why(serve):
    served = serve(Echo(fail_load=FileNotFoundError("no weights at /models/echo")))
    wait_for(lambda: served.worker.load_error is not None)
    assert health(served) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as error:
        served.stub.Infer(infer_request("echo", text="hi"), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no weights at /models/echo" in error.value.details()


def test_errors_become_statuses_with_clear_messages(serve):
    served = serve(Echo())
    wait_for(lambda: served.worker.loaded)
    cases = [
        (infer_request("echo", text="boom"), grpc.StatusCode.INTERNAL, "model `echo` failed: ValueError: the model broke"),
        (infer_request("echo", text="refuse"), grpc.StatusCode.INVALID_ARGUMENT, "no refusals please"),
        (infer_request("other", text="x"), grpc.StatusCode.INVALID_ARGUMENT, "does not serve task type `other`"),
        (infer_request("echo"), grpc.StatusCode.INVALID_ARGUMENT, "input is required"),
        (infer_request("echo", data=b"RIFF"), grpc.StatusCode.INVALID_ARGUMENT, "input.text"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as error:
            served.stub.Infer(request, timeout=5)
        assert error.value.code() == code
        assert message in error.value.details()


def test_calls_beyond_the_limit_wait_in_a_bounded_queue_then_are_refused(serve):
    release = threading.Event()
    model = Echo(release=release)
    served = serve(model, max_queue=1)
    wait_for(lambda: served.worker.loaded)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(served.stub.Infer, infer_request("echo", text="one"), timeout=10)
        assert model.running.wait(5)
        second = pool.submit(served.stub.Infer, infer_request("echo", text="two"), timeout=10)
        wait_for(lambda: len(served.worker.limit.waiters) == 1)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as error:
            served.stub.Infer(infer_request("echo", text="three"), timeout=10)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 1, "a full queue refuses at once"
        release.set()
        assert first.result().output.text == "ONE"
        assert second.result().output.text == "TWO"


def test_a_call_ends_at_its_deadline_and_its_turn_is_freed_when_the_model_is_done(serve):
    release = threading.Event()
    model = Echo(release=release)
    served = serve(model)
    wait_for(lambda: served.worker.loaded)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        served.stub.Infer(infer_request("echo", text="slow"), timeout=0.3)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    # The model still runs: its turn is held until it is done.
    assert served.worker.limit.running == 1
    release.set()
    wait_for(lambda: served.worker.limit.running == 0)
    assert served.stub.Infer(infer_request("echo", text="next"), timeout=5).output.text == "NEXT"


@pytest.mark.parametrize("model", [Counting(), SyncStream()])
def test_a_streaming_model_sends_chunks_then_its_output_and_infer_gets_the_output(serve, model):
    served = serve(model)
    wait_for(lambda: served.worker.loaded)
    messages = list(served.stub.InferStream(pb.InferStreamRequest(request=infer_request("count", text="go")), timeout=5))
    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[-1] == "output" and set(kinds[:-1]) == {"chunk"} and len(kinds) >= 3
    final = messages[-1].output.text
    assert final in ("done", "two")
    assert served.stub.Infer(infer_request("count", text="go"), timeout=5).output.text == final


def test_a_plain_model_answers_infer_stream_with_its_output_alone(serve):
    served = serve(Echo())
    wait_for(lambda: served.worker.loaded)
    messages = list(served.stub.InferStream(pb.InferStreamRequest(request=infer_request("echo", text="a")), timeout=5))
    assert [m.WhichOneof("event") for m in messages] == ["output"]
    with pytest.raises(grpc.RpcError) as error:
        list(served.stub.InferStream(pb.InferStreamRequest(), timeout=5))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_drain_turns_health_off_refuses_new_calls_and_lets_running_ones_finish(serve):
    release = threading.Event()
    model = Echo(release=release)
    served = serve(model, shutdown_grace=10)
    wait_for(lambda: served.worker.loaded)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(served.stub.Infer, infer_request("echo", text="last"), timeout=10)
        assert model.running.wait(5)
        drained = pool.submit(served.drain)
        wait_for(lambda: served.worker._closing)
        assert health(served) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as error:
            served.stub.Infer(infer_request("echo", text="new"), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in error.value.details()
        release.set()
        assert running.result().output.text == "LAST"
        drained.result(10)


def test_a_call_still_running_when_the_grace_runs_out_ends_unavailable(serve):
    model = Echo(release=threading.Event())
    served = serve(model, shutdown_grace=0.2)
    wait_for(lambda: served.worker.loaded)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(served.stub.Infer, infer_request("echo", text="stuck"), timeout=10)
        assert model.running.wait(5)
        started = time.monotonic()
        served.drain()
        assert time.monotonic() - started < 2
        with pytest.raises(grpc.RpcError) as error:
            running.result()
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "grace ran out" in error.value.details()
    model.release.set()


def test_a_call_continues_the_callers_trace(serve):
    trace = pytest.importorskip("opentelemetry.trace")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    served = serve(Echo())
    wait_for(lambda: served.worker.loaded)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    served.stub.Infer(
        infer_request("echo", text="traced"), timeout=5, metadata=[("traceparent", f"00-{trace_id}-{parent}-01")]
    )
    wait_for(lambda: exporter.get_finished_spans())
    span = exporter.get_finished_spans()[-1]
    assert span.name == "grym.worker.v1.ModelWorker/Infer"
    assert format(span.context.trace_id, "032x") == trace_id
    assert format(span.parent.span_id, "016x") == parent


def test_a_capability_declares_the_inputs_it_takes_and_refuses_unknown_kinds():
    from grym_worker.convert import capability_to_pb
    from grym_worker.models.merge import AnalysisMerge
    from grym_worker.models.vad import SileroVad

    assert list(capability_to_pb(SileroVad.capabilities[0], 0).inputs) == [pb.INPUT_KIND_AUDIO]
    assert list(capability_to_pb(AnalysisMerge.capabilities[0], 0).inputs) == []
    both = Capability("x", confidence=0.5, inputs=("text", "json"))
    assert list(capability_to_pb(both, 0).inputs) == [pb.INPUT_KIND_TEXT, pb.INPUT_KIND_JSON]
    with pytest.raises(ValueError, match="video"):
        Capability("x", confidence=0.5, inputs=("video",))
