"""The worker contract's messages to and from the SDK's types: the only
place that touches `grym.worker.v1` fields."""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration

from .model import Audio, Capability, Chunk, InvalidInput, Model, Output, Request
from .proto.grym.worker.v1 import worker_pb2 as pb


def request_from_pb(message: pb.InferRequest, time_remaining: float | None) -> Request:
    """The SDK's request for an `InferRequest`; `time_remaining` is the
    call's deadline, in seconds from now."""
    kind = message.input.WhichOneof("kind") if message.HasField("input") else None
    value: Any
    if kind == "text":
        value = message.input.text
    elif kind == "audio":
        value = Audio(data=bytes(message.input.audio.data), mime_type=message.input.audio.mime_type)
    elif kind == "json":
        value = json_format.MessageToDict(message.input.json)
    else:
        raise InvalidInput("invalid request: input is required (text, audio or json)")
    return Request(
        task_id=message.task_id,
        task_type=message.task_type,
        input=value,
        parameters=json_format.MessageToDict(message.parameters) if message.HasField("parameters") else {},
        context=json_format.MessageToDict(message.context) if message.HasField("context") else {},
        attempt=message.attempt or 1,
        tenant=message.tenant,
        deadline=None if time_remaining is None else time.monotonic() + time_remaining,
    )


def request_to_pb(request: Request) -> pb.InferRequest:
    """An `InferRequest` for a request (for tests and clients of workers)."""
    message = pb.InferRequest(
        task_id=request.task_id,
        task_type=request.task_type,
        attempt=request.attempt,
        tenant=request.tenant,
    )
    if isinstance(request.input, str):
        message.input.text = request.input
    elif isinstance(request.input, Audio):
        message.input.audio.data = request.input.data
        message.input.audio.mime_type = request.input.mime_type
    elif request.input is not None:
        message.input.json.CopyFrom(_value(request.input))
    message.parameters.update(request.parameters)
    message.context.update(request.context)
    return message


def _value(value: Any) -> struct_pb2.Value:
    message = struct_pb2.Value()
    json_format.ParseDict(value, message)
    return message


def output_to_pb(output: Output) -> pb.Output:
    """The contract's `Output`."""
    message = pb.Output(data=output.data, data_mime_type=output.data_mime_type)
    if output.text is not None:
        message.text = output.text
    if output.json is not None:
        message.json.CopyFrom(_value(output.json))
    return message


def chunk_to_pb(chunk: Chunk) -> pb.OutputChunk:
    """The contract's `OutputChunk`."""
    message = pb.OutputChunk()
    if chunk.text is not None:
        message.text = chunk.text
    if chunk.json is not None:
        message.json.CopyFrom(_value(chunk.json))
    return message


def describe_to_pb(model: Model) -> pb.DescribeResponse:
    """The model's `DescribeResponse`."""
    return pb.DescribeResponse(
        model_id=model.model_id,
        kind=model.kind,
        capabilities=[capability_to_pb(c, model.max_concurrency) for c in model.capabilities],
    )


def capability_to_pb(capability: Capability, model_limit: int) -> pb.Capability:
    """One capability, its concurrency the model's unless it names its own."""
    latency = Duration()
    latency.FromNanoseconds(int(round(capability.estimated_latency * 1e9)))
    limit = capability.max_concurrency if capability.max_concurrency is not None else model_limit
    return pb.Capability(
        task_type=capability.task_type,
        confidence=capability.confidence,
        estimated_latency=latency,
        max_concurrency=max(0, limit),
        inputs=[_INPUT_KINDS[kind] for kind in capability.inputs],
    )


_INPUT_KINDS = {
    "text": pb.INPUT_KIND_TEXT,
    "audio": pb.INPUT_KIND_AUDIO,
    "json": pb.INPUT_KIND_JSON,
}
