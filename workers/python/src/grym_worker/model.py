"""What a model is to the SDK: the `Model` base class, the request it is
given, the output and chunks it gives back, and the errors that become gRPC
statuses.

A model implements `infer` (sync or async) or, to stream, `infer_stream` (a
sync or async generator of `Chunk`s that returns, or lastly yields, its
`Output`). `load()` runs once before the worker reports `SERVING`;
`ready()` may say later that it cannot serve for now.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, ClassVar, Iterator, Union

import grpc


#: The kinds of input a capability may declare, as `Input.kind` names them.
INPUT_KINDS = ("text", "audio", "json")


@dataclass(frozen=True)
class Capability:
    """A task type the model serves, and how well (`Capability` of the
    worker contract)."""

    task_type: str
    #: In [0, 1].
    confidence: float
    #: The expected time of one call, in seconds.
    estimated_latency: float = 0.0
    #: How many calls this worker takes at once; `None`: the model's own
    #: `max_concurrency`.
    max_concurrency: int | None = None
    #: The kinds of input it takes for this type, among `"text"`, `"audio"`
    #: and `"json"`; empty: any. grymd plans no other input onto it.
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} of `{self.task_type}` is outside [0, 1]")
        unknown = [kind for kind in self.inputs if kind not in INPUT_KINDS]
        if unknown:
            raise ValueError(
                f"inputs of `{self.task_type}` name {unknown}; each is one of {list(INPUT_KINDS)}"
            )
        if self.estimated_latency < 0:
            raise ValueError(f"estimated_latency of `{self.task_type}` is negative")


@dataclass(frozen=True)
class Audio:
    """Encoded audio, as a file would hold it."""

    data: bytes
    mime_type: str = ""


#: The payload of a call: text, audio, or any JSON value.
Input = Union[str, Audio, Any]


@dataclass
class Request:
    """One call, as the contract's `InferRequest` names its fields."""

    task_id: str
    task_type: str
    input: Input | None
    parameters: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    tenant: str = ""
    #: `time.monotonic()` by which the caller wants the answer, if bounded.
    deadline: float | None = None
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline; `None` when unbounded."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def cancelled(self) -> bool:
        """Whether the caller gave up (cancelled, or its deadline passed):
        a long model should check between pieces of work and stop."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return True
        return self._cancelled.is_set()

    def audio(self) -> Audio:
        """The input as audio, or `InvalidInput` naming the field."""
        if isinstance(self.input, Audio):
            return self.input
        raise InvalidInput("invalid input: this model takes audio (input.audio)")

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        """The numeric parameter `name`, within [minimum, maximum], or
        `InvalidInput` naming it and the bounds."""
        value = self.parameters.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"invalid parameters.{name}: {value!r} is not a number")
        if not minimum <= value <= maximum:
            raise InvalidInput(f"invalid parameters.{name}: {value} is outside [{minimum}, {maximum}]")
        return float(value)

    def flag(self, name: str, default: bool = False) -> bool:
        """The boolean parameter `name`, or `InvalidInput` naming it."""
        value = self.parameters.get(name, default)
        if not isinstance(value, bool):
            raise InvalidInput(f"invalid parameters.{name}: {value!r} is not true or false")
        return value

    def text(self) -> str:
        """The input as text, or `InvalidInput` naming the field."""
        if isinstance(self.input, str):
            return self.input
        raise InvalidInput("invalid input: this model takes text (input.text)")


@dataclass
class Output:
    """What a model produced (`Output` of the contract)."""

    text: str | None = None
    json: Any = None
    data: bytes = b""
    data_mime_type: str = ""


@dataclass
class Chunk:
    """A piece of output sent before the call ends (`OutputChunk`)."""

    text: str | None = None
    json: Any = None


class ModelError(Exception):
    """A failure with a gRPC code; the message reaches the caller."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL


class InvalidInput(ModelError):
    """The input cannot be used (undecodable audio, a bad parameter): no
    other model would do better, so the orchestrator does not retry."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ModelError):
    """The request cannot run in the model's state."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ModelError):
    """The model cannot serve now; another replica or model may."""

    code = grpc.StatusCode.UNAVAILABLE


class Model:
    """A model served by a worker. Subclasses set `model_id`, `kind` and
    `capabilities`, and implement `infer` or `infer_stream`."""

    #: The model's id, for example `vad`.
    model_id: ClassVar[str] = ""
    #: The kind of model, for example `voice-activity`.
    kind: ClassVar[str] = ""
    #: The task types it serves.
    capabilities: ClassVar[tuple[Capability, ...]] = ()
    #: How many calls run at once; 0 declares no limit.
    max_concurrency: ClassVar[int] = 1

    def load(self) -> None:
        """Loads weights and the like, once, before the worker serves. An
        exception keeps the worker `NOT_SERVING`, its message the reason
        every call is refused with."""

    def ready(self) -> bool:
        """Whether the model can serve now (checked every second once
        loaded)."""
        return True

    def infer(self, request: Request) -> Output:
        """Runs the model once. May be `async def`."""
        raise NotImplementedError(f"{type(self).__name__} implements neither infer nor infer_stream")

    def infer_stream(self, request: Request) -> Iterator[Chunk | Output]:
        """Runs the model once, yielding `Chunk`s as they are found and the
        `Output` last (or returning it). May be an async generator. A model
        that implements it serves `Infer` with the same stream, its chunks
        dropped."""
        raise NotImplementedError

    def streams(self) -> bool:
        """Whether the model sends chunks (implements `infer_stream`)."""
        return type(self).infer_stream is not Model.infer_stream


def drain_sync(stream: Iterator[Chunk | Output]) -> Output:
    """The final output of a sync stream, its chunks dropped."""
    last: Output | None = None
    try:
        while True:
            item = next(stream)
            if isinstance(item, Output):
                last = item
    except StopIteration as stop:
        if isinstance(stop.value, Output):
            last = stop.value
    if last is None:
        raise ModelError("the model's stream ended without an output")
    return last


async def drain_async(stream: AsyncIterator[Chunk | Output]) -> Output:
    """The final output of an async stream, its chunks dropped."""
    last: Output | None = None
    async for item in stream:
        if isinstance(item, Output):
            last = item
    if last is None:
        raise ModelError("the model's stream ended without an output")
    return last
