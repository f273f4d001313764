"""`pitch`: Spotify's basic-pitch (the `basic-pitch` package's ONNX model) on
onnxruntime, with its note creation ported to numpy.

The clip is resampled to 22050 Hz and cut into the model's 2 s windows
overlapping by 30 frames, as `basic_pitch.inference.run_inference` does;
notes come from the onset and frame activations as in
`basic_pitch.note_creation.output_to_notes_polyphonic` (onsets from peaks
of the onset map and from jumps of the frame map, then the "melodia trick"
for notes without a clear onset), without pitch bends.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import audio
from ..model import Capability, Model, Output, Request
from ._packaged import onnx_session, package_file
from .midi import notes_to_midi

RATE = 22_050
FFT_HOP = 256
WINDOW = RATE * 2 - FFT_HOP  # AUDIO_N_SAMPLES
FRAMES_PER_SECOND = RATE // FFT_HOP  # ANNOTATIONS_FPS
WINDOW_FRAMES = FRAMES_PER_SECOND * 2  # ANNOT_N_FRAMES
OVERLAP_FRAMES = 30
OVERLAP = OVERLAP_FRAMES * FFT_HOP
HOP = WINDOW - OVERLAP
MIDI_OFFSET = 21
MAX_FREQ_INDEX = 87
ENERGY_TOLERANCE = 11
NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def note_name(pitch: int) -> str:
    """`A4` for 69."""
    return f"{NAMES[pitch % 12]}{pitch // 12 - 1}"


class BasicPitch(Model):
    """Music transcription: the notes of a clip (MIDI pitch, start, end,
    confidence) and, with `parameters.midi = true`, a MIDI file."""

    model_id = "pitch"
    kind = "music-transcription"
    capabilities = (Capability("music_transcription", confidence=0.85, estimated_latency=0.15, inputs=("audio",)),)
    max_concurrency = 2

    def __init__(self, model_path: str | None = None) -> None:
        self.model_path = model_path
        self.session = None

    def load(self) -> None:
        path = self.model_path or package_file(
            "basic_pitch", "saved_models/icassp_2022/nmp.onnx", "basic-pitch"
        )
        self.session = onnx_session(path)

    def activations(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frame ("note") and onset activations of 22050 Hz `samples`,
        (frames, 88) each."""
        assert self.session is not None, "load() first"
        padded = np.concatenate([np.zeros(OVERLAP // 2, np.float32), samples.astype(np.float32)])
        starts = range(0, len(padded), HOP)
        windows = np.zeros((len(starts), WINDOW, 1), dtype=np.float32)
        for row, start in enumerate(starts):
            piece = padded[start : start + WINDOW]
            windows[row, : len(piece), 0] = piece
        frames, onsets = self.session.run(
            ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2"], {"serving_default_input_2:0": windows}
        )
        half = OVERLAP_FRAMES // 2
        keep = int(math.floor(len(samples) * (FRAMES_PER_SECOND / RATE)))

        def unwrap(output: np.ndarray) -> np.ndarray:
            output = output[:, half:-half, :]
            return output.reshape(-1, output.shape[2])[:keep]

        return unwrap(frames), unwrap(onsets)

    def infer(self, request: Request) -> Output:
        started = time.perf_counter()
        clip = audio.decode(request.audio())
        onset_threshold = request.number("onset_threshold", 0.5, 0.0, 1.0)
        frame_threshold = request.number("frame_threshold", 0.3, 0.0, 1.0)
        minimum_note_ms = request.number("minimum_note_ms", 127.7, 0.0, 10_000.0)
        want_midi = request.flag("midi", False)
        frames, onsets = self.activations(clip.mono_at(RATE))
        min_frames = int(round(minimum_note_ms / 1000 * (RATE / FFT_HOP)))
        events = notes_from_activations(frames, onsets, onset_threshold, frame_threshold, min_frames)
        times = frame_times(frames.shape[0] + 1)
        notes = sorted(
            (
                {
                    "pitch": int(pitch),
                    "name": note_name(int(pitch)),
                    "frequency_hz": round(440.0 * 2 ** ((pitch - 69) / 12), 2),
                    "start": round(float(times[start]), 3),
                    "end": round(float(times[end]), 3),
                    "confidence": round(float(amplitude), 4),
                }
                for start, end, pitch, amplitude in events
            ),
            key=lambda n: (n["start"], n["pitch"]),
        )
        latency = time.perf_counter() - started
        shown = ", ".join(f"{n['name']} ({n['pitch']}) {n['start']:.2f}-{n['end']:.2f} s" for n in notes[:8])
        more = f" and {len(notes) - 8} more" if len(notes) > 8 else ""
        output = Output(
            text=f"{len(notes)} note(s)" + (f": {shown}{more}" if notes else ""),
            json={
                "notes": notes,
                "duration_seconds": round(clip.duration, 4),
                "sample_rate_hz": clip.sample_rate,
                "channels": clip.channels,
                "latency_ms": round(latency * 1000, 3),
            },
        )
        if want_midi:
            output.data = notes_to_midi((n["start"], n["end"], n["pitch"], n["confidence"]) for n in notes)
            output.data_mime_type = "audio/midi"
        return output


def frame_times(n_frames: int) -> np.ndarray:
    """Each output frame's time in seconds (`model_frames_to_time`)."""
    original = np.arange(n_frames) * FFT_HOP / RATE
    window_numbers = np.floor(np.arange(n_frames) / WINDOW_FRAMES)
    offset = (FFT_HOP / RATE) * (WINDOW_FRAMES - (WINDOW / FFT_HOP)) + 0.0018
    return original - offset * window_numbers


def inferred_onsets(onsets: np.ndarray, frames: np.ndarray, n_diff: int = 2) -> np.ndarray:
    """The onsets, raised where the frame map jumps (`get_infered_onsets`)."""
    diffs = []
    for n in range(1, n_diff + 1):
        shifted = np.concatenate([np.zeros((n, frames.shape[1])), frames])
        diffs.append(shifted[n:, :] - shifted[:-n, :])
    frame_diff = np.min(diffs, axis=0)
    frame_diff[frame_diff < 0] = 0
    frame_diff[:n_diff, :] = 0
    top = np.max(frame_diff)
    if top > 0:
        frame_diff = np.max(onsets) * frame_diff / top
    return np.maximum(onsets, frame_diff)


def local_maxima(values: np.ndarray) -> np.ndarray:
    """A mask of strict maxima along time (`scipy.signal.argrelmax`, axis 0)."""
    mask = np.zeros(values.shape, dtype=bool)
    if values.shape[0] >= 3:
        middle = values[1:-1]
        mask[1:-1] = (middle > values[:-2]) & (middle > values[2:])
    return mask


def notes_from_activations(
    frames: np.ndarray, onsets: np.ndarray, onset_threshold: float, frame_threshold: float, min_frames: int
) -> list[tuple[int, int, int, float]]:
    """(start frame, end frame, MIDI pitch, amplitude) of each note."""
    n_frames = frames.shape[0]
    if n_frames == 0:
        return []
    onsets = inferred_onsets(onsets, frames)
    peaks = np.where(local_maxima(onsets), onsets, 0.0)
    onset_time, onset_freq = np.where(peaks >= onset_threshold)
    remaining = frames.astype(np.float64).copy()
    notes: list[tuple[int, int, int, float]] = []
    for start, freq in zip(onset_time[::-1], onset_freq[::-1]):
        if start >= n_frames - 1:
            continue
        i, k = start + 1, 0
        while i < n_frames - 1 and k < ENERGY_TOLERANCE:
            k = k + 1 if remaining[i, freq] < frame_threshold else 0
            i += 1
        i -= k
        if i - start <= min_frames:
            continue
        remaining[start:i, max(0, freq - 1) : min(MAX_FREQ_INDEX, freq + 1) + 1] = 0
        notes.append((int(start), int(i), int(freq) + MIDI_OFFSET, float(np.mean(frames[start:i, freq]))))
    # The melodia trick: notes with no onset, from the strongest energy left.
    while np.max(remaining) > frame_threshold:
        mid, freq = np.unravel_index(np.argmax(remaining), remaining.shape)
        remaining[mid, freq] = 0
        band = slice(max(0, freq - 1), min(MAX_FREQ_INDEX, freq + 1) + 1)
        i, k = mid + 1, 0
        while i < n_frames - 1 and k < ENERGY_TOLERANCE:
            k = k + 1 if remaining[i, freq] < frame_threshold else 0
            remaining[i, band] = 0
            i += 1
        end = i - 1 - k
        i, k = mid - 1, 0
        while i > 0 and k < ENERGY_TOLERANCE:
            k = k + 1 if remaining[i, freq] < frame_threshold else 0
            remaining[i, band] = 0
            i -= 1
        start = i + 1 + k
        if end - start <= min_frames:
            continue
        notes.append((int(start), int(end), int(freq) + MIDI_OFFSET, float(np.mean(frames[start:end, freq]))))
    return notes
