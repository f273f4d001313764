"""`GrymClient`: a small, typed client of grymd for agents written in
Python. Messages are the contract's own (`grym.orchestrator.v1`), so their
fields are named as in `proto/`; `task()` builds a `Task` from keywords.

    from grym_worker import GrymClient, task

    with GrymClient("127.0.0.1:50051") as grym:
        result = grym.execute(task("audio_analysis", audio=open("clip.wav", "rb").read()))
        print(result.status, result.output.text)
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import grpc
from google.protobuf import json_format

from . import tracing
from .proto.grym.orchestrator.v1 import orchestrator_pb2 as api
from .proto.grym.orchestrator.v1 import orchestrator_pb2_grpc as api_grpc

Task = api.Task
TaskResult = api.TaskResult
StreamTaskResponse = api.StreamTaskResponse


def task(
    type: str,
    *,
    text: str | None = None,
    audio: bytes | None = None,
    mime_type: str = "",
    json: Any = None,
    parameters: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    id: str = "",
    priority: int = api.PRIORITY_UNSPECIFIED,
    timeout: float | None = None,
    depends_on: Sequence[str] = (),
    session_id: str = "",
) -> api.Task:
    """A `Task` with exactly one of `text`, `audio` or `json` as its input."""
    given = [name for name, value in (("text", text), ("audio", audio), ("json", json)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"a task takes exactly one input (text, audio or json), not {given or 'none'}")
    message = api.Task(id=id, type=type, priority=priority, depends_on=list(depends_on), session_id=session_id)
    if text is not None:
        message.input.text = text
    elif audio is not None:
        message.input.audio.data = audio
        message.input.audio.mime_type = mime_type
    else:
        json_format.ParseDict(json, message.input.json)
    if parameters:
        message.parameters.update(parameters)
    if context:
        message.context.update(context)
    if timeout is not None:
        message.timeout.FromNanoseconds(int(timeout * 1e9))
    return message


def output_json(result: api.TaskResult) -> Any:
    """A result's structured output as Python values; `None` when it has
    none."""
    if not result.HasField("output") or not result.output.HasField("json"):
        return None
    return json_format.MessageToDict(result.output.json)


class GrymClient:
    """Calls grymd's `Orchestrator` at `address` (`HOST:PORT`), plaintext,
    with an optional bearer `token` or `tenant`."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tenant: str | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channel = grpc.insecure_channel(address, options=options)
        self._stub = api_grpc.OrchestratorStub(self._channel)
        self._metadata: list[tuple[str, str]] = []
        if token:
            self._metadata.append(("authorization", f"Bearer {token}"))
        if tenant:
            self._metadata.append(("grym-tenant", tenant))

    def __enter__(self) -> "GrymClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call_metadata(self) -> list[tuple[str, str]]:
        return tracing.outgoing_metadata(self._metadata)

    def execute(self, task: api.Task, timeout: float | None = None) -> api.TaskResult:
        """Runs `task` and waits for its result (`ExecuteTask`); `timeout`
        is the call's deadline, in seconds."""
        response = self._stub.ExecuteTask(
            api.ExecuteTaskRequest(task=task), timeout=timeout, metadata=self._call_metadata()
        )
        return response.result

    def submit(self, task: api.Task, timeout: float | None = None) -> str:
        """Accepts `task` to run on its own (`SubmitTask`); its id."""
        response = self._stub.SubmitTask(
            api.SubmitTaskRequest(task=task), timeout=timeout, metadata=self._call_metadata()
        )
        return response.task_id

    def get(self, task_id: str, timeout: float | None = None) -> api.TaskResult:
        """Where the task stands, or its result (`GetTask`)."""
        response = self._stub.GetTask(
            api.GetTaskRequest(task_id=task_id), timeout=timeout, metadata=self._call_metadata()
        )
        return response.result

    def cancel(self, task_id: str, timeout: float | None = None) -> api.TaskResult:
        """Cancels the task (`CancelTask`)."""
        response = self._stub.CancelTask(
            api.CancelTaskRequest(task_id=task_id), timeout=timeout, metadata=self._call_metadata()
        )
        return response.result

    def stream(self, task: api.Task, timeout: float | None = None) -> Iterator[api.StreamTaskResponse]:
        """Runs `task` and yields its events (`StreamTask`): queued, model
        chosen, started, output chunks, attempts, steps, and the result
        last. Closing the iterator early cancels the task."""
        call = self._stub.StreamTask(
            api.StreamTaskRequest(task=task), timeout=timeout, metadata=self._call_metadata()
        )
        try:
            yield from call
        finally:
            call.cancel()
