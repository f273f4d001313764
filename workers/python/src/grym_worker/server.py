"""A `Model` served over gRPC: `grym.worker.v1.ModelWorker`, `grpc.health.v1`
and server reflection, on grpc.aio.

Behaviour, as the Rust SDK (`crates/grym-worker/src/sdk.rs`) has it:

- Health is `NOT_SERVING` (overall and for `grym.worker.v1.ModelWorker`)
  until `load()` has finished, while `ready()` says no, and from the drain
  on. `Describe` answers from the start; a call before the model is loaded,
  or after it failed to load, is `UNAVAILABLE` with the reason.
- At most `max_concurrency` calls run at once; the next ones wait their
  turn in a bounded queue (four per running call by default), and a call
  that finds the queue full is refused at once with `RESOURCE_EXHAUSTED`.
  A waiting call waits no longer than its own deadline.
- A sync model runs in a thread pool of `max_concurrency` threads, so the
  event loop keeps answering; its turn is held until its thread is done,
  even when the caller has gone. A caller that cancels or whose deadline
  passes sees its call end at once, and `Request.cancelled()` turns true
  for the model to stop early.
- `ModelError`s become their gRPC code with their message (`InvalidInput`
  is `INVALID_ARGUMENT`: the orchestrator then tries no other model); any
  other exception is `INTERNAL` naming the model and the exception. No call
  hangs on a model's failure.
- On SIGTERM or SIGINT the worker drains: health turns `NOT_SERVING`, new
  calls are refused with `UNAVAILABLE`, running and queued calls get
  `shutdown_grace` seconds to end, then those left end `UNAVAILABLE`.
- When OpenTelemetry is installed, each call runs in a server span that
  continues the caller's W3C `traceparent`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import inspect
import logging
import signal
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from . import convert, tracing
from .model import Chunk, InvalidInput, Model, ModelError, Output, Request
from .proto.grym.worker.v1 import worker_pb2 as pb
from .proto.grym.worker.v1 import worker_pb2_grpc as pb_grpc

log = logging.getLogger("grym_worker")

SERVICE_NAME = "grym.worker.v1.ModelWorker"
#: The largest message accepted or sent: 64 MiB, as the Rust workers.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Time running and queued calls get to end once shutdown begins.
DEFAULT_SHUTDOWN_GRACE = 30.0
#: No status message is longer than this.
MAX_MESSAGE_CHARS = 1024
#: After the grace period, the longest the connections may take to close.
CLOSE_WITHIN = 0.3

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def bounded(message: str) -> str:
    """A status message cut to `MAX_MESSAGE_CHARS`."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 3] + "..."


class Refused(Exception):
    """A call ended with a status before or instead of the model."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Limit:
    """A concurrency limit with a bounded queue of waiting calls; used on
    the event loop's thread only."""

    def __init__(self, running: int, max_waiting: int) -> None:
        self.limit = max(1, running)
        self.max_waiting = max(0, max_waiting)
        self.running = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        """A turn, waiting in the queue if it has room; `Refused` with
        `RESOURCE_EXHAUSTED` when it has none."""
        if self.running < self.limit and not self.waiters:
            self.running += 1
            return
        if len(self.waiters) >= self.max_waiting:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "the worker is at capacity and its queue is full")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                # The turn was handed over as the caller left: pass it on.
                self.release()
            else:
                self.waiters.remove(turn)
            raise

    def release(self) -> None:
        """Ends a turn, handing it to the first caller still waiting."""
        while self.waiters:
            turn = self.waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1


class _Service(pb_grpc.ModelWorkerServicer):
    def __init__(self, worker: "Worker") -> None:
        self.worker = worker

    async def Describe(self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext) -> pb.DescribeResponse:
        return convert.describe_to_pb(self.worker.model)

    async def Infer(self, request: pb.InferRequest, context: grpc.aio.ServicerContext) -> pb.InferResponse:
        final: Output | None = None
        async for item in self.worker.call(request, context, "Infer"):
            if isinstance(item, Output):
                final = item
        assert final is not None
        return pb.InferResponse(output=convert.output_to_pb(final))

    async def InferStream(
        self, request: pb.InferStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InferStreamResponse]:
        if not request.HasField("request"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "invalid request: InferStreamRequest.request is required"
            )
        async for item in self.worker.call(request.request, context, "InferStream"):
            if isinstance(item, Output):
                yield pb.InferStreamResponse(output=convert.output_to_pb(item))
            else:
                yield pb.InferStreamResponse(chunk=convert.chunk_to_pb(item))


class Worker:
    """Serves one `Model`. `await Worker(model).serve("127.0.0.1:0")` runs
    until SIGTERM or SIGINT (or `stop()`), then drains."""

    def __init__(
        self,
        model: Model,
        *,
        max_queue: int | None = None,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.model = model
        self.interceptors = list(interceptors)
        running = model.max_concurrency if model.max_concurrency > 0 else 0
        self.limit = Limit(running, running * 4 if max_queue is None else max_queue) if running else None
        self.shutdown_grace = shutdown_grace
        self.max_message_bytes = max_message_bytes
        self.port: int | None = None
        self.load_error: str | None = None
        self.loaded = False
        self._closing = False
        self._cutting = False
        self._calls: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._health = health_aio.HealthServicer()
        self._serving: bool | None = None
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=running or 32, thread_name_prefix=f"{model.model_id or 'model'}-infer"
        )

    # ---- life ---------------------------------------------------------

    async def start(self, address: str) -> int:
        """Listens on `address` (port 0 picks one), loads the model in the
        background, and answers the port."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.aio.server(options=options, interceptors=self.interceptors)
        pb_grpc.add_ModelWorkerServicer_to_server(_Service(self), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        _add_reflection(self._server)
        await self._set_health(False)
        port = self._server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await self._server.start()
        self.port = port
        self._background = [asyncio.ensure_future(self._load_then_watch())]
        return port

    async def serve(self, address: str, on_listening: Callable[[int], None] | None = None) -> None:
        """Serves on `address` until SIGTERM, SIGINT or `stop()`, then
        drains and returns."""
        port = await self.start(address)
        if on_listening is not None:
            on_listening(port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):
                pass
        assert self._stop is not None
        await self._stop.wait()
        await self.drain()

    def stop(self) -> None:
        """Begins the drain of a worker that `serve`s."""
        if self._stop is not None:
            self._stop.set()

    async def drain(self) -> None:
        """Health `NOT_SERVING`, new calls refused, `shutdown_grace` for
        those running and queued, then the rest ended `UNAVAILABLE`, and
        the server stopped."""
        self._closing = True
        await self._health.enter_graceful_shutdown()
        log.info("draining: new calls are refused, the %d running may end", len(self._calls))
        assert self._idle is not None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.shutdown_grace)
        except asyncio.TimeoutError:
            log.warning("the grace period ran out; the %d calls still running end UNAVAILABLE", len(self._calls))
            self._cutting = True
            for call in list(self._calls):
                call.cancel()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=CLOSE_WITHIN)
            except asyncio.TimeoutError:
                pass
        for task in self._background:
            task.cancel()
        await self._server.stop(grace=CLOSE_WITHIN)
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _load_then_watch(self) -> None:
        name = self.model.model_id
        try:
            await asyncio.get_running_loop().run_in_executor(self._threads, self.model.load)
        except Exception as error:  # noqa: BLE001 - any failure to load is reported the same way
            self.load_error = bounded(f"{type(error).__name__}: {error}" if not isinstance(error, ModelError) else str(error))
            log.error("model `%s` failed to load, so the worker stays NOT_SERVING: %s", name, self.load_error)
            return
        self.loaded = True
        log.info("model `%s` loaded", name)
        while not self._closing:
            try:
                ready = bool(self.model.ready())
            except Exception as error:  # noqa: BLE001
                log.warning("model `%s`: ready() failed: %s", name, error)
                ready = False
            await self._set_health(ready)
            await asyncio.sleep(1.0)

    async def _set_health(self, serving: bool) -> None:
        if self._closing or serving == self._serving:
            return
        self._serving = serving
        status = SERVING if serving else NOT_SERVING
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)

    # ---- calls --------------------------------------------------------

    async def call(
        self, message: pb.InferRequest, context: grpc.aio.ServicerContext, method: str
    ) -> AsyncIterator[Chunk | Output]:
        """One call's chunks and its final output, with every failure
        turned into the call's status."""
        current = asyncio.current_task()
        assert current is not None and self._idle is not None
        request: Request | None = None
        failure: tuple[grpc.StatusCode, str] | None = None
        self._calls.add(current)
        self._idle.clear()
        try:
            with tracing.server_span(context, method, message) as span:
                try:
                    request = self._admit(message, context)
                    async for item in self._run(request):
                        yield item
                except Refused as refused:
                    failure = (refused.code, refused.message)
                except ModelError as error:
                    failure = (error.code, bounded(str(error) or type(error).__name__))
                except asyncio.CancelledError:
                    if not self._cutting:
                        raise
                    failure = (
                        grpc.StatusCode.UNAVAILABLE,
                        "the worker stopped before the call ended (its shutdown grace ran out)",
                    )
                except Exception as error:  # noqa: BLE001 - a model's bug is the caller's INTERNAL
                    log.exception("model `%s` failed on task %s", self.model.model_id, message.task_id)
                    failure = (
                        grpc.StatusCode.INTERNAL,
                        bounded(f"model `{self.model.model_id}` failed: {type(error).__name__}: {error}"),
                    )
                if failure is not None:
                    tracing.record_failure(span, failure[0], failure[1])
        finally:
            if request is not None:
                request._cancelled.set()
            self._calls.discard(current)
            if not self._calls:
                self._idle.set()
        if failure is not None:
            await context.abort(failure[0], failure[1])

    def _admit(self, message: pb.InferRequest, context: grpc.aio.ServicerContext) -> Request:
        name = self.model.model_id
        if self._closing:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "the worker is shutting down; call another replica")
        if self.load_error is not None:
            raise Refused(grpc.StatusCode.UNAVAILABLE, f"model `{name}` is not loaded: {self.load_error}")
        if not self.loaded:
            raise Refused(grpc.StatusCode.UNAVAILABLE, f"model `{name}` is still loading")
        if not any(c.task_type == message.task_type for c in self.model.capabilities):
            raise InvalidInput(f"model `{name}` does not serve task type `{message.task_type}`")
        return convert.request_from_pb(message, context.time_remaining())

    async def _run(self, request: Request) -> AsyncIterator[Chunk | Output]:
        """Under the limit: the model's chunks, then its output."""
        limit = self.limit
        if limit is not None:
            await self._bounded(limit.acquire(), request, "while it waited for a turn")
        # Whoever ends the turn: this coroutine, or the thread still running
        # after its caller left.
        release: list[Callable[[], None]] = [limit.release] if limit is not None else []
        try:
            if not self.model.streams():
                if inspect.iscoroutinefunction(self.model.infer):
                    output = await self._bounded(self.model.infer(request), request)
                else:
                    output = await self._bounded(self._in_thread(self.model.infer, request, release), request)
                yield _checked(output, final=True)
                return
            stream = self.model.infer_stream(request)
            final: Output | None = None
            while True:
                if inspect.isasyncgen(stream):
                    try:
                        done, item = False, await self._bounded(stream.__anext__(), request)
                    except StopAsyncIteration:
                        done, item = True, None
                else:
                    done, item = await self._bounded(self._in_thread(_step, stream, release), request)
                if done:
                    if isinstance(item, Output):
                        final = item
                    break
                if final is not None:
                    raise ModelError(f"model `{self.model.model_id}` sent more after its output")
                item = _checked(item)
                if isinstance(item, Output):
                    final = item
                else:
                    yield item
            if final is None:
                raise ModelError(f"model `{self.model.model_id}` ended its stream without an output")
            yield final
        finally:
            for end in release:
                end()

    async def _bounded(self, work: Awaitable[Any], request: Request, waiting: str = "") -> Any:
        """`work`, cut at the call's deadline with `DEADLINE_EXCEEDED`."""
        remaining = request.time_remaining()
        if remaining is None:
            return await work
        try:
            return await asyncio.wait_for(work, timeout=remaining)
        except asyncio.TimeoutError:
            where = waiting or f"before model `{self.model.model_id}` answered"
            raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, f"the call's deadline passed {where}") from None

    async def _in_thread(self, function: Callable[..., Any], argument: Any, release: list[Callable[[], None]]) -> Any:
        """Runs `function(argument)` in the model's threads, in the caller's
        context (its span); if the caller leaves first, the thread ends the
        turn when it is done."""
        loop = asyncio.get_running_loop()
        running = self._threads.submit(contextvars.copy_context().run, function, argument)
        try:
            return await asyncio.wrap_future(running)
        except asyncio.CancelledError:
            if not running.done() and release:
                ends = list(release)
                release.clear()
                running.add_done_callback(lambda _: loop.call_soon_threadsafe(lambda: [end() for end in ends]))
            raise


def _step(stream: Any) -> tuple[bool, Any]:
    """The next item of a sync stream: (True, returned value) at its end."""
    try:
        return False, next(stream)
    except StopIteration as stop:
        return True, stop.value


def _checked(item: Any, final: bool = False) -> Chunk | Output:
    if isinstance(item, Output) or (isinstance(item, Chunk) and not final):
        return item
    raise ModelError(f"the model returned {type(item).__name__}, not {'Output' if final else 'Chunk or Output'}")


def _add_reflection(server: grpc.aio.Server) -> None:
    """Server reflection, when grpcio-reflection is installed."""
    try:
        from grpc_reflection.v1alpha import reflection
    except ImportError:
        return
    names = (
        pb.DESCRIPTOR.services_by_name["ModelWorker"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
