"""Measures the bundled ONNX models: latency per second of audio in process,
and one worker process's throughput at its declared concurrency over gRPC.

    target/py-venv/bin/python workers/python/bench.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "tests"))
from conftest import infer_request, wav  # noqa: E402

from grym_worker.model import Audio, Request  # noqa: E402
from grym_worker.models.pitch import BasicPitch  # noqa: E402
from grym_worker.models.vad import SileroVad  # noqa: E402
from grym_worker.proto.grym.worker.v1 import worker_pb2_grpc as pb_grpc  # noqa: E402


def speechlike(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    return wav(tone.astype(np.float32), rate)


def in_process(model, task_type: str, seconds: float, runs: int = 10) -> float:
    data = speechlike(seconds)
    request = Request(task_id="b", task_type=task_type, input=Audio(data))
    call = (lambda: list(model.infer_stream(request))) if model.streams() else (lambda: model.infer(request))
    call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / seconds * 1000


def throughput(name: str, task_type: str, concurrency: int, seconds: float = 10.0, clip: float = 1.0):
    worker = subprocess.Popen(
        [sys.executable, "-m", "grym_worker.cli", name, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        address = worker.stdout.readline().strip().removeprefix("listening on ")
        stub = pb_grpc.ModelWorkerStub(grpc.insecure_channel(address))
        request = infer_request(task_type, data=speechlike(clip))
        for _ in range(50):
            try:
                stub.Infer(request, timeout=10)
                break
            except grpc.RpcError:
                time.sleep(0.1)
        latencies: list[float] = []
        end = time.monotonic() + seconds

        def loop() -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                stub.Infer(request, timeout=30)
                latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            for future in [pool.submit(loop) for _ in range(concurrency)]:
                future.result()
        elapsed = time.monotonic() - started
        latencies.sort()
        return len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000
    finally:
        worker.terminate()
        worker.wait(10)


def main() -> None:
    vad, pitch = SileroVad(), BasicPitch()
    vad.load()
    pitch.load()
    print("| model | clip | ms per second of audio (median of 10, in process) |")
    print("| --- | --- | --- |")
    for seconds in (1.0, 10.0, 60.0):
        print(f"| vad | {seconds:g} s | {in_process(vad, 'voice_activity', seconds):.1f} |")
    for seconds in (1.0, 10.0, 60.0):
        print(f"| pitch | {seconds:g} s | {in_process(pitch, 'music_transcription', seconds, runs=5):.1f} |")
    print()
    print("| worker | concurrency | clip | calls/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, task_type in (("vad", "voice_activity"), ("pitch", "music_transcription")):
        rate, p50, p99 = throughput(name, task_type, 2)
        print(f"| {name} | 2 (declared) | 1 s | {rate:.1f} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
