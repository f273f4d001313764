"""Shared fixtures: WAV files made in the test, espeak-ng speech, and a
worker served on a free loopback port in a thread of its own."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest

from grym_worker.model import Model
from grym_worker.proto.grym.worker.v1 import worker_pb2 as pb
from grym_worker.proto.grym.worker.v1 import worker_pb2_grpc as pb_grpc
from grym_worker.server import Worker


def wav(samples: np.ndarray, rate: int, bits: int = 16, float_format: bool = False, extensible: bool = False) -> bytes:
    """A WAV file of (frames, channels) samples in [-1, 1]."""
    samples = np.atleast_2d(samples.T).T if samples.ndim == 1 else samples
    channels = samples.shape[1]
    if float_format:
        body = samples.astype(f"<f{bits // 8}").tobytes()
    elif bits == 8:
        body = np.clip(samples * 127 + 128, 0, 255).astype(np.uint8).tobytes()
    elif bits == 24:
        ints = np.clip(samples * (2**23 - 1), -(2**23), 2**23 - 1).astype("<i4")
        body = b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in ints.reshape(-1))
    else:
        scale = 2 ** (bits - 1) - 1
        body = np.clip(samples * scale, -scale - 1, scale).astype(f"<i{bits // 8}").tobytes()
    tag = 3 if float_format else 1
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0)
        fmt += struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def sine(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A spoken sentence from espeak-ng (22050 Hz mono), with a second of
    silence before and after."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = Path(tmp_path_factory.mktemp("speech")) / "sentence.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SENTENCE], check=True)
    from grym_worker import audio
    from grym_worker.model import Audio

    clip = audio.decode(Audio(path.read_bytes()))
    silence = np.zeros((clip.sample_rate, 1), dtype=np.float32)
    return wav(np.concatenate([silence, clip.samples, silence]), clip.sample_rate)


class Served:
    """A worker on a loopback port, run by a loop in its own thread."""

    def __init__(self, model: Model, **options) -> None:
        self.loop = asyncio.new_event_loop()
        self.worker = Worker(model, **options)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.worker.start("127.0.0.1:0"))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10), "the worker did not start"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.ModelWorkerStub(self.channel)

    def drain(self, timeout: float = 30) -> None:
        asyncio.run_coroutine_threadsafe(self.worker.drain(), self.loop).result(timeout)

    def close(self) -> None:
        self.channel.close()
        if not self.worker._closing:
            self.drain()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def serve() -> Iterator:
    """`serve(model, **options)` -> a `Served` worker, closed after the test."""
    started: list[Served] = []

    def start(model: Model, **options) -> Served:
        served = Served(model, **options)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def infer_request(task_type: str, data: bytes | None = None, text: str | None = None, **parameters) -> pb.InferRequest:
    request = pb.InferRequest(task_id="t-1", task_type=task_type, attempt=1)
    if data is not None:
        request.input.audio.data = data
        request.input.audio.mime_type = "audio/wav"
    if text is not None:
        request.input.text = text
    if parameters:
        request.parameters.update(parameters)
    return request
