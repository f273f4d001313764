"""What the adapters of local checkpoints share: the checkpoint found or a
clear error, and the heavy imports (the `gama` and `wav2vec2` extras)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..model import FailedPrecondition


def checkpoint_dir(path: str | None, variable: str, model: str) -> Path:
    """The checkpoint folder `path` (else `$variable`), which must hold a
    `config.json`; otherwise an error saying what is missing."""
    given = path or os.environ.get(variable, "")
    if not given:
        raise FailedPrecondition(f"no {model} checkpoint given: pass --checkpoint PATH or set {variable}")
    folder = Path(given)
    if not folder.is_dir():
        raise FailedPrecondition(f"the {model} checkpoint {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise FailedPrecondition(f"the {model} checkpoint {folder} has no config.json (a Hugging Face model folder)")
    return folder


def heavy_imports(extra: str) -> tuple[Any, Any]:
    """`torch` and `transformers`, or an error naming the extra to install."""
    try:
        import torch
        import transformers
    except ImportError as error:
        raise FailedPrecondition(
            f"{error.name} is not installed: pip install './workers/python[{extra}]'"
        ) from None
    return torch, transformers
