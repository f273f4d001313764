"""`gama`: GAMA, an audio-language model that answers a question about a
clip, from a local checkpoint (PyTorch + transformers, the `gama` extra).

Up to the forward pass everything is numpy and tested without weights: the
clip decoded, down-mixed and resampled to 16 kHz, its 128-bin Kaldi log-mel
filterbank (25 ms frames every 10 ms, as `torchaudio.compliance.kaldi.fbank`
with GAMA's settings) padded or cut to 1024 frames and normalised as GAMA
was trained; the Alpaca-style prompt GAMA expects; and the answer cut out
of the generated text. The checkpoint is a Hugging Face folder whose model
takes the filterbank as `audio_input` in `generate`, as GAMA's does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import audio
from ..model import Capability, InvalidInput, Model, Output, Request
from .checkpoint import checkpoint_dir, heavy_imports

RATE = 16_000
MEL_BINS = 128
TARGET_FRAMES = 1024
#: GAMA's (and AST's) filterbank normalisation.
FBANK_MEAN = -4.2677393
FBANK_STD = 4.5689974
DEFAULT_QUESTION = "Describe the audio in detail."
PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{question}\n\n### Input:\n\n\n### Response:\n"
)
MAX_QUESTION_CHARS = 4096


@dataclass
class Prepared:
    """What the forward pass takes."""

    fbank: np.ndarray  # (TARGET_FRAMES, MEL_BINS), float32
    prompt: str
    question: str


def kaldi_fbank(samples: np.ndarray, rate: int = RATE, bins: int = MEL_BINS) -> np.ndarray:
    """Kaldi's log mel filterbank (`torchaudio.compliance.kaldi.fbank` with
    `htk_compat=True, use_energy=False, window_type='hanning', dither=0`):
    (frames, bins)."""
    length, shift, fft = int(rate * 0.025), int(rate * 0.010), 512
    x = samples.astype(np.float64)
    if len(x) < length:
        return np.zeros((0, bins), dtype=np.float32)
    n = 1 + (len(x) - length) // shift
    frames = np.lib.stride_tricks.sliding_window_view(x, length)[::shift][:n].copy()
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1]
    frames[:, 0] -= 0.97 * frames[:, 0]
    frames *= np.hanning(length)
    power = np.abs(np.fft.rfft(frames, n=fft)) ** 2
    fbank = power @ mel_banks(bins, fft, rate).T
    return np.log(np.maximum(fbank, np.finfo(np.float32).eps)).astype(np.float32)


def mel_banks(bins: int, fft: int, rate: int, low: float = 20.0) -> np.ndarray:
    """Kaldi's triangular mel filters over the FFT bins: (bins, fft/2+1)."""

    def mel(f: np.ndarray | float) -> np.ndarray | float:
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    high = rate / 2
    low_mel, high_mel = mel(low), mel(high)
    delta = (high_mel - low_mel) / (bins + 1)
    edges = low_mel + delta * np.arange(bins + 2)
    centre_mel = mel(np.arange(fft // 2) * rate / fft)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (centre_mel[None, :] - left) / (centre - left)
    down = (right - centre_mel[None, :]) / (right - centre)
    weights = np.maximum(0.0, np.minimum(up, down))
    return np.pad(weights, ((0, 0), (0, 1)))  # the Nyquist bin weighs nothing


def gama_features(samples: np.ndarray) -> np.ndarray:
    """GAMA's input: the filterbank of 16 kHz `samples`, DC removed,
    padded with zeros or cut to 1024 frames, normalised."""
    fbank = kaldi_fbank(samples - samples.mean())
    if fbank.shape[0] < TARGET_FRAMES:
        fbank = np.pad(fbank, ((0, TARGET_FRAMES - fbank.shape[0]), (0, 0)))
    fbank = fbank[:TARGET_FRAMES]
    return ((fbank - FBANK_MEAN) / (FBANK_STD * 2)).astype(np.float32)


def answer_from(generated: str) -> str:
    """The answer in GAMA's generated text: what follows the prompt's
    `### Response:`, up to an end-of-sequence marker."""
    answer = generated.split("### Response:")[-1]
    for stop in ("</s>", "### Instruction:"):
        answer = answer.split(stop)[0]
    return answer.strip()


class Gama(Model):
    """Audio analysis and audio question answering by GAMA."""

    model_id = "gama"
    kind = "audio-language"
    capabilities = (
        Capability("audio_analysis", confidence=0.95, estimated_latency=0.8, inputs=("audio",)),
        Capability(
            "audio_question_answering", confidence=0.95, estimated_latency=0.8, inputs=("audio",)
        ),
    )
    max_concurrency = 1

    def __init__(self, checkpoint: str | None = None, max_new_tokens: int = 400) -> None:
        self.checkpoint = checkpoint
        self.max_new_tokens = max_new_tokens
        self.model: Any = None
        self.tokenizer: Any = None
        self.torch: Any = None

    def load(self) -> None:
        folder = checkpoint_dir(self.checkpoint, "GRYM_GAMA_CHECKPOINT", "GAMA")
        torch, transformers = heavy_imports("gama")
        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, trust_remote_code=True, torch_dtype=torch.float32
        )
        self.model.eval()

    def prepare(self, request: Request) -> Prepared:
        """Everything before the forward pass."""
        clip = audio.decode(request.audio())
        question = request.parameters.get("question") or request.context.get("question") or DEFAULT_QUESTION
        if not isinstance(question, str):
            raise InvalidInput("invalid parameters.question: it must be text")
        question = question.strip()[:MAX_QUESTION_CHARS]
        return Prepared(
            fbank=gama_features(clip.mono_at(RATE)),
            prompt=PROMPT.format(question=question),
            question=question,
        )

    def generate(self, prepared: Prepared) -> str:
        """The forward pass: the generated text."""
        torch = self.torch
        inputs = self.tokenizer(prepared.prompt, return_tensors="pt")
        fbank = torch.from_numpy(prepared.fbank).unsqueeze(0)
        with torch.no_grad():
            tokens = self.model.generate(
                input_ids=inputs["input_ids"],
                audio_input=fbank,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
        return self.tokenizer.decode(tokens[0], skip_special_tokens=False)

    def shape(self, generated: str, prepared: Prepared, started: float) -> Output:
        """The output: the answer as text, with the question in `json`."""
        answer = answer_from(generated)
        return Output(
            text=answer,
            json={
                "answer": answer,
                "question": prepared.question,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )

    def infer(self, request: Request) -> Output:
        started = time.perf_counter()
        prepared = self.prepare(request)
        return self.shape(self.generate(prepared), prepared, started)
