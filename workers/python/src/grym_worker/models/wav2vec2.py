"""`wav2vec2`: speech recognition with transformers' `Wav2Vec2ForCTC` from a
local checkpoint (PyTorch + transformers, the `wav2vec2` extra).

Up to the forward pass everything is numpy and tested without weights: the
clip decoded, down-mixed and resampled to 16 kHz and normalised to zero mean
and unit variance (what `Wav2Vec2FeatureExtractor` does with
`do_normalize`), and the transcript read from the logits by greedy CTC
decoding over the checkpoint's `vocab.json` (repeats collapsed, the pad
token as blank, `|` between words).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import audio
from ..model import Capability, FailedPrecondition, Model, Output, Request
from .checkpoint import checkpoint_dir, heavy_imports

RATE = 16_000


def normalise(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (`Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`)."""
    samples = samples.astype(np.float32)
    return (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)


def read_vocab(folder: Path) -> dict[int, str]:
    """The checkpoint's tokens by id."""
    path = folder / "vocab.json"
    if not path.is_file():
        raise FailedPrecondition(f"the wav2vec2 checkpoint {folder} has no vocab.json")
    vocab = json.loads(path.read_text())
    # A multilingual vocab nests a table per language; take the first.
    if vocab and all(isinstance(v, dict) for v in vocab.values()):
        vocab = next(iter(vocab.values()))
    return {int(i): token for token, i in vocab.items()}


def ctc_decode(ids: np.ndarray, vocab: dict[int, str], blank: str = "<pad>", delimiter: str = "|") -> str:
    """Greedy CTC: repeats collapsed, blanks and special tokens dropped, the
    word delimiter a space."""
    words: list[str] = []
    previous = None
    for token_id in ids.tolist():
        if token_id == previous:
            continue
        previous = token_id
        token = vocab.get(int(token_id), "")
        if token == blank or (token.startswith("<") and token.endswith(">")):
            continue
        words.append(" " if token == delimiter else token)
    return " ".join("".join(words).split())


class Wav2Vec2(Model):
    """Transcription of speech by a wav2vec2 CTC model."""

    model_id = "wav2vec2"
    kind = "speech-recognition"
    capabilities = (Capability("transcription", confidence=0.8, estimated_latency=0.3, inputs=("audio",)),)
    max_concurrency = 1

    def __init__(self, checkpoint: str | None = None) -> None:
        self.checkpoint = checkpoint
        self.model: Any = None
        self.torch: Any = None
        self.vocab: dict[int, str] = {}
        self.blank = "<pad>"

    def load(self) -> None:
        folder = checkpoint_dir(self.checkpoint, "GRYM_WAV2VEC2_CHECKPOINT", "wav2vec2")
        self.vocab = read_vocab(folder)
        config = json.loads((folder / "config.json").read_text())
        pad_id = config.get("pad_token_id")
        if pad_id is not None and int(pad_id) in self.vocab:
            self.blank = self.vocab[int(pad_id)]
        torch, transformers = heavy_imports("wav2vec2")
        self.torch = torch
        self.model = transformers.Wav2Vec2ForCTC.from_pretrained(folder, local_files_only=True)
        self.model.eval()

    def prepare(self, request: Request) -> np.ndarray:
        """Everything before the forward pass: the model's input values."""
        clip = audio.decode(request.audio())
        return normalise(clip.mono_at(RATE))

    def logits(self, values: np.ndarray) -> np.ndarray:
        """The forward pass: (frames, vocabulary) logits."""
        torch = self.torch
        with torch.no_grad():
            out = self.model(torch.from_numpy(values).unsqueeze(0)).logits
        return out[0].numpy()

    def shape(self, logits: np.ndarray, seconds: float, started: float) -> Output:
        """The transcript of the logits."""
        transcript = ctc_decode(np.argmax(logits, axis=-1), self.vocab, self.blank)
        return Output(
            text=transcript,
            json={
                "transcript": transcript,
                "duration_seconds": round(seconds, 4),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )

    def infer(self, request: Request) -> Output:
        started = time.perf_counter()
        values = self.prepare(request)
        return self.shape(self.logits(values), len(values) / RATE, started)
