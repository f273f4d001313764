"""Audio in: WAV decoded without third-party code (PCM 8/16/24/32-bit,
IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE; other formats through
`soundfile` when it is installed), down-mixed to mono and resampled with a
Kaiser-windowed sinc, so a model gets the rate it was trained at from any
rate and channel count."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from .model import Audio, InvalidInput

#: The most channels accepted.
MAX_CHANNELS = 64
#: The highest sample rate accepted.
MAX_SAMPLE_RATE = 768_000

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class Clip:
    """Decoded audio: `samples` is (frames, channels), float32 in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    def mono(self) -> np.ndarray:
        """The channels' mean, float32."""
        if self.channels == 1:
            return self.samples[:, 0]
        return self.samples.mean(axis=1, dtype=np.float64).astype(np.float32)

    def mono_at(self, rate: int) -> np.ndarray:
        """Mono, resampled to `rate`."""
        return resample(self.mono(), self.sample_rate, rate)


def decode(audio: Audio) -> Clip:
    """The clip in `audio`, or `InvalidInput` saying why it is undecodable."""
    data = audio.data
    if not data:
        raise InvalidInput("undecodable audio: input.audio.data is empty")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return decode_wav(data)
    try:
        import soundfile
    except ImportError:
        raise InvalidInput(
            f"undecodable audio: not a WAV file (RIFF/WAVE) and no decoder for `{audio.mime_type or 'unknown'}` "
            "is installed (install soundfile for FLAC, OGG and others)"
        ) from None
    import io

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as error:  # noqa: BLE001 - libsndfile's errors are many
        raise InvalidInput(f"undecodable audio: {error}") from None
    return _checked(samples, int(rate))


def decode_wav(data: bytes) -> Clip:
    """A RIFF/WAVE file's samples."""
    fmt: tuple[int, int, int, int] | None = None
    payload: bytes | None = None
    at = 12
    while at + 8 <= len(data):
        chunk, size = struct.unpack_from("<4sI", data, at)
        body = data[at + 8 : at + 8 + size]
        if chunk == b"fmt ":
            if len(body) < 16:
                raise InvalidInput("undecodable audio: the WAV fmt chunk is too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE:
                if len(body) < 26:
                    raise InvalidInput("undecodable audio: the WAV extensible fmt chunk is too short")
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            payload = body
            break
        at += 8 + size + (size & 1)
    if fmt is None:
        raise InvalidInput("undecodable audio: the WAV file has no fmt chunk")
    if payload is None:
        raise InvalidInput("undecodable audio: the WAV file has no data chunk")
    tag, channels, rate, bits = fmt
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidInput(f"undecodable audio: {channels} channels (1 to {MAX_CHANNELS} are accepted)")
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        raise InvalidInput(f"undecodable audio: sample rate {rate} Hz (1 to {MAX_SAMPLE_RATE} are accepted)")
    width = bits // 8
    if bits % 8 or width == 0:
        raise InvalidInput(f"undecodable audio: {bits} bits per sample")
    frame = width * channels
    payload = payload[: len(payload) - len(payload) % frame]
    raw = np.frombuffer(payload, dtype=np.uint8)
    if tag == _PCM and bits == 8:
        samples = (raw.astype(np.float32) - 128.0) / 128.0
    elif tag == _PCM and bits in (16, 32):
        ints = np.frombuffer(payload, dtype=f"<i{width}")
        samples = ints.astype(np.float32) / float(2 ** (bits - 1))
    elif tag == _PCM and bits == 24:
        triples = raw.reshape(-1, 3).astype(np.int32)
        ints = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / float(1 << 23)
    elif tag == _FLOAT and bits in (32, 64):
        samples = np.frombuffer(payload, dtype=f"<f{width}").astype(np.float32)
    else:
        raise InvalidInput(f"undecodable audio: WAV format {tag} with {bits} bits per sample is not supported")
    return _checked(samples.reshape(-1, channels), rate)


def _checked(samples: np.ndarray, rate: int) -> Clip:
    if samples.shape[0] == 0:
        raise InvalidInput("undecodable audio: the clip holds no samples")
    if not np.all(np.isfinite(samples)):
        raise InvalidInput("undecodable audio: the clip holds samples that are not finite")
    return Clip(samples=np.ascontiguousarray(samples, dtype=np.float32), sample_rate=rate)


def resample(signal: np.ndarray, rate_in: int, rate_out: int, half_width: int = 16) -> np.ndarray:
    """`signal` at `rate_out`: band-limited interpolation with a Kaiser
    windowed sinc (beta 8.6), `half_width` zero crossings each side,
    low-passed below the lower rate's Nyquist frequency so that
    downsampling does not alias. The ratio of the rates is reduced to
    up/down; each of the `up` phases has its kernel computed once."""
    signal = np.asarray(signal, dtype=np.float32)
    if rate_in == rate_out:
        return signal
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError("sample rates must be positive")
    common = math.gcd(rate_in, rate_out)
    up, down = rate_out // common, rate_in // common
    n_out = int(math.ceil(len(signal) * up / down))
    taps, table = _kernels(up, down, half_width)
    lead = -int(taps[0])
    padded = np.concatenate(
        [np.zeros(lead, np.float32), signal, np.zeros(len(taps) + 1, np.float32)]
    )
    steps = np.arange(n_out, dtype=np.int64) * down
    base = steps // up + lead
    phase = steps % up
    out = np.zeros(n_out, dtype=np.float32)
    for j, offset in enumerate(taps):
        out += table[phase, j] * padded[base + int(offset)]
    return out


_KERNELS: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}


def _kernels(up: int, down: int, half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """The tap offsets and, per phase, the kernel at them (float32)."""
    key = (up, down, half_width)
    if key not in _KERNELS:
        cutoff = min(1.0, up / down)
        reach = half_width / cutoff
        taps = np.arange(-math.ceil(reach) + 1, math.ceil(reach) + 1)
        distance = (np.arange(up)[:, None] / up) - taps[None, :]
        ratio = np.clip(distance / reach, -1.0, 1.0)
        window = np.i0(8.6 * np.sqrt(1.0 - ratio * ratio)) / np.i0(8.6)
        table = (cutoff * np.sinc(cutoff * distance) * window).astype(np.float32)
        if len(_KERNELS) > 32:
            _KERNELS.clear()
        _KERNELS[key] = (taps, table)
    return _KERNELS[key]
