"""The models `grym-py-worker` serves by name."""

from __future__ import annotations

from typing import Callable

from ..model import Model


def _vad(**options: str) -> Model:
    from .vad import SileroVad

    return SileroVad(model_path=options.get("model_path"))


def _pitch(**options: str) -> Model:
    from .pitch import BasicPitch

    return BasicPitch(model_path=options.get("model_path"))


def _merge(**options: str) -> Model:
    from .merge import AnalysisMerge

    return AnalysisMerge()


def _gama(**options: str) -> Model:
    from .gama import Gama

    return Gama(checkpoint=options.get("checkpoint"))


def _wav2vec2(**options: str) -> Model:
    from .wav2vec2 import Wav2Vec2

    return Wav2Vec2(checkpoint=options.get("checkpoint"))


#: Each bundled model by the name the console script takes.
BUNDLED: dict[str, Callable[..., Model]] = {
    "vad": _vad,
    "pitch": _pitch,
    "merge": _merge,
    "gama": _gama,
    "wav2vec2": _wav2vec2,
}
