"""`vad`: Silero VAD (the `silero-vad` package's ONNX model) on onnxruntime.

Speech segments are found the way `silero_vad.get_speech_timestamps` finds
them: a frame (512 samples at 16 kHz, with the previous 64 as context) is
speech from a probability of `threshold` on, until the probability stays
below `threshold - 0.15` for `min_silence_ms`; segments shorter than
`min_speech_ms` are dropped, and each is padded by `speech_pad_ms` within
its neighbours. Each segment is streamed as soon as its end is known.
"""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from .. import audio
from ..model import Capability, Chunk, Model, Output, Request
from ._packaged import onnx_session, package_file

RATE = 16_000
WINDOW = 512
CONTEXT = 64


class SileroVad(Model):
    """Voice activity: speech segments (start, end seconds) and the speech
    ratio of a clip, at any sample rate and channel count."""

    model_id = "vad"
    kind = "voice-activity"
    capabilities = (Capability("voice_activity", confidence=0.9, estimated_latency=0.05, inputs=("audio",)),)
    max_concurrency = 2

    def __init__(self, model_path: str | None = None) -> None:
        self.model_path = model_path
        self.session = None

    def load(self) -> None:
        path = self.model_path or package_file("silero_vad", "data/silero_vad.onnx", "silero-vad")
        self.session = onnx_session(path)

    def probabilities(self, samples: np.ndarray, request: Request | None = None) -> Iterator[float]:
        """The speech probability of each 32 ms frame of 16 kHz `samples`."""
        assert self.session is not None, "load() first"
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, CONTEXT), dtype=np.float32)
        rate = np.array(RATE, dtype=np.int64)
        padded = np.pad(samples, (0, (-len(samples)) % WINDOW))
        for start in range(0, len(padded), WINDOW):
            if request is not None and request.cancelled():
                return
            frame = np.concatenate([context, padded[None, start : start + WINDOW]], axis=1)
            probability, state = self.session.run(None, {"input": frame, "state": state, "sr": rate})
            context = frame[:, -CONTEXT:]
            yield float(probability.reshape(-1)[0])

    def infer_stream(self, request: Request) -> Iterator[Chunk | Output]:
        started = time.perf_counter()
        clip = audio.decode(request.audio())
        threshold = request.number("threshold", 0.5, 0.05, 0.99)
        min_silence = request.number("min_silence_ms", 100, 0, 10_000) / 1000
        min_speech = request.number("min_speech_ms", 250, 0, 10_000) / 1000
        pad = request.number("speech_pad_ms", 30, 0, 1_000) / 1000
        samples = clip.mono_at(RATE)
        segments: list[dict[str, float]] = []
        finder = Segments(len(samples) / RATE, threshold, min_silence, min_speech, pad)
        for index, probability in enumerate(self.probabilities(samples, request)):
            for segment in finder.push(index * WINDOW / RATE, probability):
                segments.append(segment)
                yield Chunk(json={"segment": segment, "index": len(segments) - 1})
        for segment in finder.finish():
            segments.append(segment)
            yield Chunk(json={"segment": segment, "index": len(segments) - 1})
        speech = sum(s["end"] - s["start"] for s in segments)
        ratio = speech / clip.duration if clip.duration else 0.0
        latency = time.perf_counter() - started
        summary = (
            f"{len(segments)} speech segment(s), {speech:.2f} s of {clip.duration:.2f} s "
            f"({ratio:.0%} speech)"
        )
        return Output(
            text=summary,
            json={
                "segments": segments,
                "speech_ratio": round(ratio, 4),
                "speech_seconds": round(speech, 4),
                "duration_seconds": round(clip.duration, 4),
                "sample_rate_hz": clip.sample_rate,
                "channels": clip.channels,
                "latency_ms": round(latency * 1000, 3),
            },
        )


class Segments:
    """Silero's segmentation of frame probabilities into speech segments,
    fed frame by frame so each segment is known as soon as it ends."""

    def __init__(self, duration: float, threshold: float, min_silence: float, min_speech: float, pad: float):
        self.duration = duration
        self.threshold = threshold
        self.negative = max(threshold - 0.15, 0.01)
        self.min_silence = min_silence
        self.min_speech = min_speech
        self.pad = pad
        self.start: float | None = None
        self.silence_from: float | None = None
        self.last_end = 0.0

    def push(self, at: float, probability: float) -> list[dict[str, float]]:
        """The frame at `at` seconds; the segment it ended, if any."""
        if probability >= self.threshold:
            self.silence_from = None
            if self.start is None:
                self.start = at
            return []
        if self.start is None or probability >= self.negative:
            return []
        if self.silence_from is None:
            self.silence_from = at
        if at - self.silence_from < self.min_silence:
            return []
        return self._close(self.silence_from)

    def finish(self) -> list[dict[str, float]]:
        """The segment still open at the end of the clip, if any."""
        if self.start is None:
            return []
        return self._close(self.duration)

    def _close(self, end: float) -> list[dict[str, float]]:
        start, self.start, self.silence_from = self.start, None, None
        assert start is not None
        if end - start <= self.min_speech:
            return []
        padded_start = max(self.last_end, start - self.pad, 0.0)
        padded_end = min(self.duration, end + self.pad)
        self.last_end = padded_end
        return [{"start": round(padded_start, 3), "end": round(padded_end, 3)}]
